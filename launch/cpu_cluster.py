r"""Starts N processes on this machine joined by ``jax.distributed`` over localhost (gloo collectives).

Each process gets its own CPU devices (``--devices-per-process``), the coordinator address and its
process id through the environment, and runs the same command. The way to test multi-host code
without a cluster:

    python launch/cpu_cluster.py --processes 2 --devices-per-process 4 -- \
        python -m experiments.train --config experiments/configs/mnist_simple_cnn.py:smoke \
        --workdir runs/cluster --config.parallel=sharded --config.distributed=True

Process 0's output is shown; every process's log is in ``--log-dir`` (default: a temporary folder).
The exit status is the first non-zero status of any process (0 when all succeed).
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=4)
    parser.add_argument("--port", type=int, default=0, help="coordinator port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--log-dir", default=None)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before every process is stopped")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command every process runs")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if args.processes < 1 or args.devices_per_process < 1:
        parser.error("--processes and --devices-per-process must be positive")
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="cpu_cluster-")
    os.makedirs(log_dir, exist_ok=True)
    address = f"127.0.0.1:{args.port or free_port()}"
    processes, logs = [], []
    for index in range(args.processes):
        env = dict(os.environ)
        env.update(
            JAX_COORDINATOR_ADDRESS=address,
            JAX_NUM_PROCESSES=str(args.processes),
            JAX_PROCESS_ID=str(index),
            JAX_NUM_CPU_DEVICES=str(args.devices_per_process),
            JAX_PLATFORMS="cpu",
        )
        log = open(os.path.join(log_dir, f"process{index}.log"), "w")
        logs.append(log)
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + args.timeout
    status = 0
    try:
        while any(p.poll() is None for p in processes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still running after {args.timeout}s")
            failed = [p.returncode for p in processes if p.returncode not in (None, 0)]
            if failed:  # one process died: the others would wait for it forever
                status = failed[0]
                break
            time.sleep(0.2)
    except (KeyboardInterrupt, TimeoutError) as stop:
        print(f"cpu_cluster: {stop or 'interrupted'}; stopping all processes", file=sys.stderr)
        status = 124
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
    status = status or next((p.returncode for p in processes if p.returncode), 0)
    with open(os.path.join(log_dir, "process0.log")) as first:
        sys.stdout.write(first.read())
    print(f"cpu_cluster: {args.processes} processes x {args.devices_per_process} CPU devices, logs in {log_dir}, "
          f"exit status {status}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
