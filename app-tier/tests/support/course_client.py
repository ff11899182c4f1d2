"""A client written like the course's multithreaded workload generator.

It posts every image of a folder at once, one thread per request, with
`requests.post(url, files={"myfile": f})`, and prints what the course's generator printed
(`NAME uploaded!`, `Classification result: LABEL`). Unlike the original it also prints one
machine-readable line per request (`RESULT<TAB>name<TAB>status<TAB>body`) and never
swallows an exception, so a test can check every answer.
"""

import argparse
import os
import sys
import threading

import requests

lock = threading.Lock()


def send_one(url, path, results):
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            response = requests.post(url, files={"myfile": f}, timeout=300)
        status, body = response.status_code, response.text
    except Exception as e:  # noqa: BLE001 - report, never drop
        status, body = 0, f"sendErr: {url}: {e}"
    with lock:
        print(f"{name} uploaded!")
        print(f"Classification result: {body}")
        print(f"RESULT\t{name}\t{status}\t{body}")
        results.append(status)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--num_request", type=int, required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--image_folder", required=True)
    args = p.parse_args()
    images = sorted(os.listdir(args.image_folder))[: args.num_request]
    results = []
    threads = [
        threading.Thread(target=send_one, args=(args.url, os.path.join(args.image_folder, n), results))
        for n in images
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys.exit(0 if results.count(200) == len(images) else 1)


if __name__ == "__main__":
    main()
