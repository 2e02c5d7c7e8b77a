"""Reaching the Hugging Face hub: where it cannot be reached, a hub name fails at once, not after retries.

huggingface_hub retries a request that cannot connect (5 times, backing off 1 to 8 s), and transformers and datasets
make several such requests for one name: without a network, loading a hub model, tokenizer or dataset took 25 to
55 s to end in its error. `use_hub(name)` runs before such a load: unless offline mode is already set
(`HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`), it asks the hub endpoint (`$HF_ENDPOINT`, else huggingface.co) once per
process, with a short timeout, and where nothing answers turns huggingface_hub, transformers and datasets to
offline mode for the rest of the process (and the processes it starts): a name in the local cache still loads, any
other fails at once. Where the hub answers, nothing changes.
"""
from __future__ import annotations

import http.client
import os
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Union

#: seconds the endpoint has to answer the one probe of a process
PROBE_TIMEOUT_S = 5.0

_reachable: Optional[bool] = None  # the probe's answer, once asked


def use_hub(name_or_path: Union[str, Path]) -> None:
    """Before loading `name_or_path` with transformers or datasets: when it is a hub name (`is_hub_name`) and the hub
    cannot be reached (`hub_reachable`), switch to offline mode, so that the load fails at once unless the name is
    cached. A local path (one that is missing too), or offline mode already set, changes nothing."""
    from huggingface_hub import constants

    if not is_hub_name(name_or_path) or constants.HF_HUB_OFFLINE or hub_reachable():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"  # (read by the processes this one starts: ranks, workers)
    constants.HF_HUB_OFFLINE = True  # what huggingface_hub and transformers read (is_offline_mode)
    import datasets.config

    datasets.config.HF_HUB_OFFLINE = True  # datasets' copy, read when a dataset is loaded


def is_hub_name(name_or_path: Union[str, Path]) -> bool:
    """Whether `name_or_path` names a hub repo ('name' or 'org/name') rather than a local path: one that exists, or
    that starts with '.', '/' or '~', or has more than one '/'."""
    text = str(name_or_path)
    return not (text.startswith((".", "/", "~")) or text.count("/") > 1 or Path(text).exists())


def hub_reachable() -> bool:
    """Whether the hub endpoint answers a HEAD request within `PROBE_TIMEOUT_S` (any HTTP status, or a TLS handshake,
    is an answer; proxies are those of the environment). Asked once per process."""
    global _reachable
    if _reachable is None:
        from huggingface_hub import constants

        _reachable = _answers_in_time(constants.ENDPOINT, PROBE_TIMEOUT_S)
    return _reachable


def _answers_in_time(url: str, timeout: float) -> bool:
    """`_answers`, given up (False) after `timeout` seconds in all: the socket timeout bounds connecting and reading,
    not the name lookup before them, which the system resolver may hold for tens of seconds."""
    answer: list = []
    probe = threading.Thread(target=lambda: answer.append(_answers(url, timeout)), daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answer) and answer[0]


def _answers(url: str, timeout: float) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # a status, an error one too, is an answer
    except urllib.error.URLError as error:  # no connection (name, refused, timeout), or a TLS failure
        return isinstance(error.reason, ssl.SSLError)
    except http.client.HTTPException:  # something answered, though not in HTTP
        return True
    except (OSError, ValueError):  # a reset or timeout while reading; an endpoint that is no URL
        return False
    return True
