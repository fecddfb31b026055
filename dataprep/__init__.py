"""The corpus pipeline: crawl archives in, deduplicated token shards with a manifest out."""
