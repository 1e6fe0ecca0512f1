import httpx, time
from contextlib import ExitStack
from facade.settings import FacadeSettings
from tests.integration.facade.conftest import TORCH_ONLY, FacadeServerThread, Keys, Replica
from tests.integration.facade.test_facade_routing import LONG_STREAM, replicas  # noqa

pytestmark = TORCH_ONLY


def test_dbg(replicas, facade_keys):
    a, b = replicas
    settings = FacadeSettings(
        backends=[a.address, b.address],
        keys_file=facade_keys.path,
        refresh_interval_s=0.2,
        probe_timeout_s=0.5,
    )
    server = FacadeServerThread(settings).start()
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json=LONG_STREAM,
        headers={"Authorization": f"Bearer {facade_keys.full}"},
        timeout=30,
    ) as r:
        t = time.time()
        for i, line in enumerate(r.iter_lines()):
            if i < 6 or "error" in line:
                print(round(time.time() - t, 3), line[:300])
            if i == 4:
                print("running", a.running, b.running)
        print("end", time.time() - t, i)
    server.stop()
