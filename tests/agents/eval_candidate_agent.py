"""A stand-in agent for the evaluation's best-of-N comparison (the `command` provider runs it,
text format): it fixes calc.add() of tests/eval_project.py according to its prompt's header.
A single run (no candidate mark) and candidates c1 and c3 make wrong fixes; c2 the right one;
as the judge ("(selection)") it answers c2.

usage: eval_candidate_agent.py PROMPT
"""

import re
import sys

header = sys.argv[1].splitlines()[0]
if "(selection)" in header:
    print("c2 adds; c1 multiplies and c3 drops the sign.")
    print('{"choice": 2, "reasons": "c2 returns a + b as the issue asks"}')
    sys.exit(0)
found = re.search(r"\(candidate c(\d+)\)", header)
k = int(found.group(1)) if found else 0
new = {0: "a * b", 1: "a * b", 2: "a + b", 3: "abs(a - b)"}[k]
with open("calc.py") as fh:
    text = fh.read()
with open("calc.py", "w") as fh:
    fh.write(text.replace("    return a - b\n", f"    return {new}\n"))
print(f"add() now returns {new}")
