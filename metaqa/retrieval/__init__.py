"""Retrieval: per-theme paragraph indexes (BM25, dense MiniLM, hybrid by reciprocal-rank fusion),
long-document sentence filtering, and the retrieve-then-read pipeline.

    bm25      BM25Index (bm25s) and the text analyser
    dense     SentenceEncoder (MiniLM, mean pooling, unit vectors) and DenseIndex
    fusion    reciprocal_rank_fusion
    index     ThemeIndex / CorpusIndex: build, save, load, search
    longdoc   sentence_spans, SentenceFilter, FilteredContext (offsets back to the document)
    pipeline  RetrieveThenRead, Thresholds, calibrate
"""
