"""Knowledge graphs, difficulty-controlled multi-hop task synthesis, and the local search corpus."""

from erlgym.redsearch.graph import Document, Fact, GraphError, KnowledgeGraph
from erlgym.redsearch.tasks import Task, TaskSet, TaskSetError

__all__ = ["Document", "Fact", "GraphError", "KnowledgeGraph", "Task", "TaskSet", "TaskSetError"]
