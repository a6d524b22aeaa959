"""Documents: extraction, chunking, embeddings, indexes and search."""
