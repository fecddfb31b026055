"""Start training processes for a composed config: on this machine now; more clusters to come."""
