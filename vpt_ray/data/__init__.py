"""Stage 1, data: the bar contract (`bars`), the source chain that fills a ticker's period from
the local parquet store, then GCS, then Polygon, else the built-in synthetic market (`chain`,
`local` and `local_file`, `gcs`, `polygon` with its HTTP transport `polygon_transport`,
`synthetic`), resampling to the configured bar (`resample`), quality
checks (`quality`), the importer for users' own files (`importer`) and phase 5's price-band
universe (`universe`). Source errors name the file, field and rule (`errors`).

Imports only `vpt_ray.core`; `python -m vpt_ray.data` is the command in
`vpt_ray.pipeline.data_cli`.
"""
