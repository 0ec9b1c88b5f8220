"""Adds one row to a section's table in bench/results.md, creating the file or the section.

usage: results.py FILE "## Section title" "intro paragraph" "| header | row |" "|---|---|" "| row |"
"""
import sys

path, title, intro, header, rule, row = sys.argv[1:7]
try:
    lines = open(path, encoding="utf-8").read().splitlines()
except FileNotFoundError:
    lines = ["# Benchmark results", "",
             "Measured by `make bench` on the machine named; every ratio compares against a reference",
             "measured in the same run on the same machine and data.", ""]
if title not in lines:
    lines += ["", title, "", intro, "", header, rule, row]
else:
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    last_row = max(i for i in range(start, end) if lines[i].startswith("|"))
    lines.insert(last_row + 1, row)
open(path, "w", encoding="utf-8").write("\n".join(lines).strip("\n") + "\n")
