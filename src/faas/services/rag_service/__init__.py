"""RAG service: collections, documents, hybrid retrieval and grounded answers with citations."""
