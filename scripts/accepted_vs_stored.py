#!/usr/bin/env python3
"""Proves that every message the publisher answered 202 during an API check is stored exactly once, and
nothing else: reads the ids from newman's JSON report and schemathesis' HAR files, then pages through the
consumer's GET /message (following its Link headers) until the stored ids are exactly those. With
READ_TOKEN in the environment, it reads with that bearer token."""
import json
import os
import sys
import time
import urllib.parse
import urllib.request


def ids_in(body):
    try:
        value = json.loads(body)
    except ValueError:
        return []
    if isinstance(value, dict) and "id" in value and value.get("status") == "queued":
        return [value["id"]]
    if isinstance(value, dict) and isinstance(value.get("ids"), list):
        return value["ids"]
    return []


def accepted(newman_report, har_files):
    answers, ids = 0, set()
    run = json.load(open(newman_report))["run"]
    for execution in run["executions"]:
        response = execution.get("response") or {}
        if response.get("code") == 202:
            answers += 1
            ids.update(ids_in(bytes(response["stream"]["data"]).decode()))
    for har in har_files:
        for entry in json.load(open(har))["log"]["entries"]:
            if entry["response"]["status"] == 202:
                answers += 1
                ids.update(ids_in(entry["response"]["content"].get("text", "")))
    return answers, ids


def stored(consumer_url):
    ids, url = [], f"{consumer_url}/message?limit=1000"
    while url:
        request = urllib.request.Request(url)
        if os.environ.get("READ_TOKEN"):
            request.add_header("Authorization", f"Bearer {os.environ['READ_TOKEN']}")
        with urllib.request.urlopen(request) as response:
            ids += [message["id"] for message in json.load(response)]
            link = response.headers.get("Link")
        # The link is relative unless PUBLIC_BASE_URL is set: resolve it against the page asked.
        url = urllib.parse.urljoin(url, link[link.index("<") + 1 : link.index(">")]) if link else None
    return ids


def main():
    consumer_url, newman_report, *har_files = sys.argv[1:]
    answers, wanted = accepted(newman_report, har_files)
    deadline = time.monotonic() + 60
    while True:
        rows = stored(consumer_url)
        if set(rows) == wanted and len(rows) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    missing, extra = wanted - set(rows), set(rows) - wanted
    duplicates = len(rows) - len(set(rows))
    print(f"202 answers: {answers}; distinct ids accepted: {len(wanted)}; rows stored: {len(rows)}; "
          f"missing: {len(missing)}; unexpected: {len(extra)}; duplicated: {duplicates}")
    if missing or extra or duplicates:
        sys.exit("accepted and stored messages differ")


if __name__ == "__main__":
    main()
