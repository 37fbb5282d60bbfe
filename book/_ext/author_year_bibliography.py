"""Sphinx extension: author-year labels in the bibliography, matching the in-text citations.

The text cites author-year (`bibtex_reference_style: author_year` gives "[Wang et al., 2020]"),
while pybtex's formatting styles label the bibliography with numbers ("[1]"). This registers a
pybtex formatting style "authoryear": the `unsrt` entry format, entries sorted by author, year
and title, each labelled as it is cited in the text ("Wang et al., 2020", "Li and Roth, 2002";
"2019a", "2019b" where two entries would share a label). Select it with
`bibtex_default_style: authoryear` in _config.yml.
"""

from __future__ import annotations

from collections import Counter
from string import ascii_lowercase

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearTitleSorting
from sphinx.application import Sphinx

NAME = "authoryear"


def surname(person) -> str:
    return " ".join(person.prelast_names + person.last_names)


def author_year(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    year = entry.fields.get("year", "n.d.")
    if not persons:
        who = entry.fields.get("organization") or entry.fields.get("title", "Anonymous")
    elif len(persons) == 1:
        who = surname(persons[0])
    elif len(persons) == 2:
        who = f"{surname(persons[0])} and {surname(persons[1])}"
    else:
        who = f"{surname(persons[0])} et al."
    return f"{who}, {year}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year(e) for e in entries]
        shared = {label for label, n in Counter(labels).items() if n > 1}
        seen: Counter = Counter()
        for label in labels:
            if label in shared:
                suffix = ascii_lowercase[seen[label]]
                seen[label] += 1
                label += suffix
            yield label


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = AuthorYearTitleSorting


def setup(app: Sphinx) -> dict:
    register_plugin("pybtex.style.labels", NAME, AuthorYearLabelStyle, force=True)
    register_plugin("pybtex.style.formatting", NAME, AuthorYearStyle, force=True)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
