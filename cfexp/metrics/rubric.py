"""TR109's keyword report-quality rubric, reproduced exactly, plus a corrected variant.

The original scored each generated report by vocabulary and Markdown shape
(docs/metrics.md, "Report quality"):

    overall = 0.3 technical_depth + 0.25 data_analysis + 0.25 structure
              + 0.2 min(citations / 10, 1)

It measures vocabulary, not correctness. One quirk is kept on purpose in the
faithful score: the keyword ``"GPU"`` is looked up in the *lower-cased* text,
so it can never match and technical depth tops out at 14/15. The
``*_corrected`` fields look up ``"gpu"`` instead and change nothing else.
Pure functions, no I/O.
"""

from __future__ import annotations

import re

# The original's list, spelled as it was (upper-case "GPU" included).
TECHNICAL_TERMS = (
    "performance", "throughput", "latency", "optimization", "benchmark",
    "metrics", "analysis", "configuration", "GPU", "memory", "utilization",
    "efficiency", "scalability", "architecture", "algorithm",
)  # fmt: skip
DATA_TERMS = (
    "table", "chart", "graph", "metric", "statistic", "average", "median",
    "percentile", "correlation", "trend", "pattern", "insight", "finding",
    "comparison", "baseline", "improvement", "delta", "variance",
)  # fmt: skip
STRUCTURE_PATTERNS = tuple(
    re.compile(p, re.MULTILINE)
    for p in (r"^#\s+", r"^##\s+", r"^###\s+", r"^\*\*.*\*\*", r"^\|.*\|", r"^\d+\.\s+", r"^-\s+")
)
CITATION_PATTERN = re.compile(r"\[.*?\]|\(.*?\)|Technical Report|Section \d+")
SECTION_PATTERN = re.compile(r"^#+\s+", re.MULTILINE)


def _term_share(lowered: str, terms: tuple[str, ...]) -> float:
    # Substring test, as the original: "metric" also matches "metrics".
    return sum(1 for term in terms if term in lowered) / len(terms)


def _overall(technical: float, data: float, structure: float, citations: int) -> float:
    return 0.3 * technical + 0.25 * data + 0.25 * structure + 0.2 * min(citations / 10, 1.0)


def score_report(text: str) -> dict[str, float]:
    """The rubric's fields for one report text (all floats, for metric logging)."""
    lowered = text.lower()
    technical = _term_share(lowered, TECHNICAL_TERMS)
    technical_corrected = _term_share(lowered, tuple(t.lower() for t in TECHNICAL_TERMS))
    data = _term_share(lowered, DATA_TERMS)
    structure = sum(1 for p in STRUCTURE_PATTERNS if p.search(text)) / len(STRUCTURE_PATTERNS)
    citations = len(CITATION_PATTERN.findall(text))
    return {
        "report_quality_overall": _overall(technical, data, structure, citations),
        "report_quality_technical_depth": technical,
        "report_quality_data_analysis": data,
        "report_quality_structure": structure,
        # A count of matches, not a share (the overall caps it at 10).
        "report_quality_citations": float(citations),
        "report_word_count": float(len(text.split())),
        "report_section_count": float(len(SECTION_PATTERN.findall(text))),
        "report_quality_overall_corrected": _overall(
            technical_corrected, data, structure, citations
        ),
        "report_quality_technical_depth_corrected": technical_corrected,
    }
