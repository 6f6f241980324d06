"""Evaluation: RULER-style retrieval (NIAH, variable tracking), perplexity by position, comparison reports.

    records = hydrahead.eval.niah({"teacher": teacher, "hybrid": hybrid}, tokenizer,
                                  lengths=[1024, 4096], depths=[0, 0.5, 1])
    results = hydrahead.eval.perplexity(models, tokenizer, load_documents(["docs/"]), length=8192)
    hydrahead.eval.write_report("report/", niah=records, perplexity=results)

Models and tokenizers load with `hydrahead.load_model` / `hydrahead.load_tokenizer` (also importable
from here). lm-evaluation-harness: `hydrahead.eval.lm_harness` (imported on demand; needs the `eval` extra).
"""

from hydrahead.errors import EvalError
from hydrahead.models.loading import load_model, load_tokenizer
from hydrahead.eval.niah import NiahRecord, evaluate_niah, niah
from hydrahead.eval.ppl import Document, PerplexityResult, evaluate_perplexity, load_documents, perplexity
from hydrahead.eval.report import write_report
from hydrahead.eval.answers import exact, score
from hydrahead.eval.tasks import TASKS, Example, Haystack, TaskSpec, make_example, make_examples, parse_tasks

__all__ = [
    "TASKS",
    "Document",
    "EvalError",
    "Example",
    "Haystack",
    "NiahRecord",
    "PerplexityResult",
    "TaskSpec",
    "evaluate_niah",
    "evaluate_perplexity",
    "exact",
    "load_documents",
    "load_model",
    "load_tokenizer",
    "make_example",
    "make_examples",
    "niah",
    "parse_tasks",
    "perplexity",
    "score",
    "write_report",
]
