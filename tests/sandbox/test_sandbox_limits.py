"""Meta's throughput (130429) and pair (131056) limits over real HTTP, both with HTTP 400."""

from __future__ import annotations

from tests.support.sandbox_client import META_HEADERS, meta_body, meta_url


async def test_meta_sender_throughput_is_130429(client, sandbox) -> None:
    sandbox.set_config({"limits": {"meta_per_sender": {"per_second": 0.5, "burst": 3}}})
    statuses, codes = [], []
    for i in range(4):
        async with client.post(
            meta_url(sandbox), json=meta_body(f"t{i}", to=f"1555000000{i}"), headers=META_HEADERS
        ) as resp:
            statuses.append(resp.status)
            if resp.status != 200:
                codes.append((await resp.json())["error"]["code"])
    assert statuses == [200, 200, 200, 400]
    assert codes == [130429]
    # a different business number is not limited
    async with client.post(
        meta_url(sandbox, sender="999"), json=meta_body("t9"), headers=META_HEADERS
    ) as resp:
        assert resp.status == 200
    assert sandbox.stats()["requests"]["meta"]["400:130429"] == 1


async def test_meta_pair_limit_is_131056_per_recipient(client, sandbox) -> None:
    sandbox.set_config({"limits": {"pair": {"per_second": 0.05, "burst": 2}}})
    results = []
    for i in range(3):
        async with client.post(
            meta_url(sandbox), json=meta_body(f"q{i}"), headers=META_HEADERS
        ) as resp:
            body = await resp.json()
            results.append((resp.status, body.get("error", {}).get("code")))
    assert results == [(200, None), (200, None), (400, 131056)]
    async with client.post(
        meta_url(sandbox), json=meta_body("q9", to="15559999999"), headers=META_HEADERS
    ) as resp:
        assert resp.status == 200  # another customer has their own pair budget
    assert [r.order_ref for r in sandbox.requests()] == ["q0", "q1", "q9"]


async def test_limits_off_by_config(client, sandbox) -> None:
    sandbox.set_config({"limits": {"meta_per_sender": {"per_second": 0}}})
    for i in range(150):
        async with client.post(
            meta_url(sandbox), json=meta_body(f"r{i}"), headers=META_HEADERS
        ) as resp:
            assert resp.status == 200
