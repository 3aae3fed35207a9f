"""Raw recommendation data (MovieLens, Amazon Reviews 2023) -> GeniusRec processed-dataset folders."""
