"""A stand-in agent for the best-of-N tests (the `command` provider runs it, text format): it
reads which candidate it is from its prompt's header ("(candidate c2)") and makes that
candidate's change in its worktree; as the judge ("(selection)") it answers as told.

usage: candidate_agent.py PROMPT TAG MODE [RELEASE]
MODE: "work" (candidates change greeter.py: c1 wrongly, c2 at length, c3 briefly), "hang" (every
candidate hangs with a child, both tagged), "all-wrong" (every candidate as c1), "wrong-until"
(as "all-wrong" until the file RELEASE exists, then as "work"), "judge-wait" (the judge hangs, with a child, until
the file RELEASE exists, then answers c2), "judge-garbage".
"""

import os
import re
import subprocess
import sys
import time

prompt, tag, mode = sys.argv[1], sys.argv[2], sys.argv[3]
header = prompt.splitlines()[0]
if "(selection)" in header:
    if mode == "judge-wait" and not os.path.exists(sys.argv[4]):
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", tag])
        while not os.path.exists(sys.argv[4]):
            time.sleep(0.1)
    print("I compared them.")
    print("not json at all" if mode == "judge-garbage" else '{"choice": 2, "reasons": "c2 documents the function"}')
    sys.exit(0)
if header.startswith("TACX-STAGE: reviewing"):
    print("Looks right.\n\nVERDICT: APPROVE")
    sys.exit(0)
found = re.search(r"\(candidate c(\d+)\)", header)
if found is None:
    sys.exit(f"not a candidate: {header}")
k = int(found.group(1))
if mode == "hang":
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", tag])
    time.sleep(600)
body = {
    1: '    return f"Bye {name}"\n',
    2: '    """Say goodbye to `name`."""\n    message = "Goodbye"\n    return message + ", " + name\n',
    3: '    return f"Goodbye, {name}"\n',
}[1 if mode == "all-wrong" or (mode == "wrong-until" and not os.path.exists(sys.argv[4])) else (k - 1) % 3 + 1]
with open("greeter.py", "a") as fh:
    fh.write("\n\ndef farewell(name: str) -> str:\n" + body)
print(f"candidate c{k} done")
