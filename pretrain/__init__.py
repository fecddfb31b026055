"""DeepSpeed ZeRO pretraining of a decoder-only transformer on dataprep's token shards."""
