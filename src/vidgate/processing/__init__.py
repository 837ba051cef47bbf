"""Background analysis of stored videos: the pipeline, its analyzers, the task queues."""
