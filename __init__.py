"""reasonpipe: reasoning-first pretraining corpora (datatrove stages, AP trimming, Arrow shards) and a ZAYA1 trainer.

Every top-level folder of the repository is a subpackage: `reasonpipe.pipeline`, `reasonpipe.filters`,
`reasonpipe.trimming`, `reasonpipe.tokenizer`, `reasonpipe.trainer`. The modules beside this file
(`sample`, `segments`, `docio`) are the types and the file format they all share, at the bottom of the import graph:
they import nothing of the project.
"""

__version__ = "0.2.0"
