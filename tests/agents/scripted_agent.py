"""A small stand-in agent program for tests of the runner's process handling (the `command`
provider runs it). It acts on the worktree for real: writes files, commits, prints a verdict,
hangs, spawns children, prints malformed lines. Pipeline tests of agents use the real CLIs.

usage: scripted_agent.py ACTION [ARG...]
"""

import hashlib
import json
import os
import subprocess
import sys
import time

action, args = sys.argv[1], sys.argv[2:]
print(json.dumps({"type": "system", "subtype": "init", "session_id": f"fake-{os.getpid()}", "model": "fake"}), flush=True)
if action == "plan":
    open("plan.md", "w").write("# Plan\n\n1. Add a farewell function.\n")
elif action == "build":
    with open("greeter.py", "a") as fh:
        fh.write("\n\ndef farewell(name: str) -> str:\n    return f'Goodbye, {name}'\n")
elif action == "review":
    open("review.md", "w").write("Looks right.\n\nVERDICT: " + (args[0] if args else "APPROVE") + "\n")
elif action == "hang":
    # A child in the same process group that would outlive a careless kill; both carry the
    # tag (args[0]) on their command line so a test can look for them from the host.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", args[0]])
    print(json.dumps({"type": "system", "subtype": "hanging"}), flush=True)
    time.sleep(600)
elif action == "stubborn":
    # Ignores SIGTERM (notes that it got one) and hangs, the first time; plans the next time.
    import signal

    marker = args[0]
    if not os.path.exists(marker):
        signal.signal(signal.SIGTERM, lambda *_: open(marker + ".term", "w").close())
        with open(marker, "w") as fh:
            fh.write(str(os.getpgid(0)))
        time.sleep(600)
    open("plan.md", "w").write("# Plan\n\n1. Done on the second run.\n")
elif action == "stdin-plan":
    # The prompt arrives on stdin: the plan records how much of it came and how it ended.
    prompt = sys.stdin.read()
    open("plan.md", "w").write(f"# Plan\n\n{len(prompt)} characters; ends with {prompt.rstrip()[-50:]}\n")
elif action == "echo-plan":
    # The prompt arrives on stdin: the plan is its SHA-256, so a test can compare what came.
    data = sys.stdin.buffer.read()
    open("plan.md", "w").write(f"# Plan\n\nsha256 {hashlib.sha256(data).hexdigest()}\n")
elif action == "malformed":
    print("this is not json {", flush=True)
    print("\x00\x01 binary garbage", flush=True)
    open("plan.md", "w").write("# Plan\n")
elif action == "env":
    # Report what the agent was given, then print a token it found somewhere.
    with open(args[0], "w") as fh:  # a path in the worktree
        json.dump(dict(os.environ), fh)
    print("found a token: ghp_" + "A1b2C3d4" * 5, flush=True)
    open("plan.md", "w").write("# Plan\n")
elif action == "burst":
    # N assistant lines at once, all of one message (its usage repeated on every line, as Claude
    # does), then a plan.
    line = {"type": "assistant", "message": {"id": "msg_burst", "type": "message", "role": "assistant", "model": "fake",
            "content": [{"type": "text", "text": ""}], "usage": {"input_tokens": 10, "output_tokens": 5}}}
    pause = 1 / float(args[1]) if len(args) > 1 else 0  # lines per second, or all at once
    for i in range(int(args[0])):
        line["message"]["content"][0]["text"] = f"line {i}"
        sys.stdout.write(json.dumps(line) + "\n")
        if pause:
            sys.stdout.flush()
            time.sleep(pause)
    sys.stdout.flush()
    open("plan.md", "w").write("# Plan\n")
elif action == "pause":
    # Lines, then waits for the test at each named step: prints five lines, writes STEP.ready
    # in its worktree, waits for STEP.go; then a plan.
    for step in args:
        for i in range(5):
            print(json.dumps({"type": "assistant", "message": {"id": f"msg_{step}_{i}", "type": "message", "role": "assistant",
                              "content": [{"type": "text", "text": f"{step} {i}"}]}}), flush=True)
        open(step + ".ready", "w").close()
        while not os.path.exists(step + ".go"):
            time.sleep(0.05)
    for step in args:
        for suffix in (".ready", ".go"):
            os.unlink(step + suffix)
    open("plan.md", "w").write("# Plan\n")
elif action == "spend":
    # A looping agent that costs money (the budget tests): each step appends a line to work.txt,
    # then reports one model call of claude-sonnet-4-5 (100,000 input + 10,000 output tokens:
    # $0.45) and waits a little, until work.txt has args[0] lines. A budget kills it in that wait
    # (the step's line is written); run again on the kept work, it goes on from the lines there.
    total = int(args[0])
    print(json.dumps({"type": "system", "subtype": "init", "session_id": f"spend-{os.getpid()}", "model": "claude-sonnet-4-5"}), flush=True)
    done = len(open("work.txt").read().splitlines()) if os.path.exists("work.txt") else 0
    steps = 0
    for step in range(done, total):
        with open("work.txt", "a") as fh:
            fh.write(f"step {step}\n")
        print(json.dumps({"type": "assistant", "message": {"id": f"msg_spend_{os.getpid()}_{step}", "type": "message", "role": "assistant",
                          "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": f"step {step} done"}],
                          "usage": {"input_tokens": 100000, "output_tokens": 10000}}}), flush=True)
        steps += 1
        time.sleep(float(args[1]) if len(args) > 1 else 0.5)
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": f"{total} steps", "num_turns": steps,
                      "usage": {"input_tokens": 100000 * steps, "output_tokens": 10000 * steps}}), flush=True)
    sys.exit(0)
elif action == "fail":
    print("something broke", file=sys.stderr)
    sys.exit(3)
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": f"done {action}", "num_turns": 1,
                  "usage": {"input_tokens": 10, "output_tokens": 5}}), flush=True)
