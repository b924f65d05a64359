"""BM25 search over a corpus of documents, with ``bm25s``.

Each document is indexed by its title and text, lowercased, with English stopwords
removed. A query with no indexable word (empty, or stopwords only) returns no results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import bm25s
import numpy as np

from erlgym.redsearch.graph import Document

# bm25s 0.3.16 sets its logger to DEBUG when imported, which overrides the level the
# application configured and prints a debug line for every index built. NOTSET makes it
# follow the application's level again.
logging.getLogger("bm25s").setLevel(logging.NOTSET)


@dataclass
class SearchHit:
    """One search result: a document id and its BM25 score."""

    doc_id: str
    score: float


class SearchIndex:
    """A BM25 index over ``documents``, searchable by free text."""

    def __init__(self, documents: dict[str, Document] | list[Document]):
        items = list(documents.values()) if isinstance(documents, dict) else list(documents)
        self.doc_ids = [document.doc_id for document in items]
        self.retriever = bm25s.BM25()
        if items:
            texts = [f"{document.title}. {document.text}" for document in items]
            self.retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Return up to ``k`` documents in decreasing score; documents with score 0 are left out."""
        if not self.doc_ids or k < 1:
            return []
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)
        if not tokens or not tokens[0]:
            return []
        known = [token for token in tokens[0] if token in self.retriever.vocab_dict]
        if not known:
            return []
        ids, scores = self.retriever.retrieve([known], k=min(k, len(self.doc_ids)), show_progress=False)
        return [SearchHit(self.doc_ids[int(index)], float(score))
                for index, score in zip(np.asarray(ids)[0], np.asarray(scores)[0]) if score > 0]
