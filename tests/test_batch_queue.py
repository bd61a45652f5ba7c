"""The server's request queue: clients answered together send their next requests a few milliseconds apart;
with settling, the next run waits for them and takes them as one batch, without it the first arrival runs
alone. An idle queue still starts at once. Every request gets its own answers either way."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from nlp_rnn.deploy.serve import BatchQueue


def closed_loop(settle_s: float, clients: int = 8, rounds: int = 3, gap_s: float = 0.002):
    """`clients` clients, each sending one text, then again `rounds` times, each a little later than the one
    before it (client i after i * gap_s). Returns the batch sizes the model saw and every answer."""
    sizes: list[int] = []

    def run(texts: list[str], request) -> list[str]:
        sizes.append(len(texts))
        time.sleep(0.01)  # the model's work
        return [t.upper() for t in texts]

    async def main():
        queue = BatchQueue(run, ThreadPoolExecutor(max_workers=1), gather=64, max_wait_s=0, settle_s=settle_s)

        async def client(i: int) -> list:
            answers = []
            for r in range(rounds):
                if r:
                    await asyncio.sleep(i * gap_s)
                answers.append(await queue.submit([f"c{i} r{r}"], ("greedy",)))
            return answers

        answers = await asyncio.gather(*(client(i) for i in range(clients)))
        return answers, queue.stats()

    answers, stats = asyncio.run(main())
    return sizes, answers, stats


def test_settling_gathers_the_clients_just_answered_into_one_batch() -> None:
    sizes, answers, stats = closed_loop(settle_s=1.0)
    assert sizes == [8, 8, 8]
    assert answers == [[[f"C{i} R{r}"] for r in range(3)] for i in range(8)]
    assert stats["batches"] == 3 and stats["mean_batch"] == 8.0 and stats["settle_s"] > 0


def test_without_settling_the_first_arrival_runs_alone_and_batches_alternate() -> None:
    sizes, answers, stats = closed_loop(settle_s=0.0)
    assert sizes[0] == 8 and len(sizes) > 3 and min(sizes) < 8 and sum(sizes) == 24
    assert answers == [[[f"C{i} R{r}"] for r in range(3)] for i in range(8)]
    assert stats["settle_s"] == 0


def test_an_idle_queue_starts_at_once_and_a_settle_ends_when_nothing_comes() -> None:
    def run(texts, request):
        return texts

    async def main():
        queue = BatchQueue(run, ThreadPoolExecutor(max_workers=1), gather=64, max_wait_s=0, settle_s=0.3)
        started = time.monotonic()
        await queue.submit(["alone"], ())
        first = time.monotonic() - started  # nothing ran before: no settling
        await asyncio.sleep(0.5)  # longer than settle_s: the queue has gone idle
        idle = not queue.busy
        started = time.monotonic()
        await queue.submit(["again"], ())
        return first, idle, time.monotonic() - started

    first, idle, again = asyncio.run(main())
    assert first < 0.2 and idle and again < 0.2


def two_groups(settle_s: float, rounds: int = 3) -> list[int]:
    """Clients 0-3 send at once, clients 4-7 while the first group's run is busy, each client `rounds` times:
    at the end of every run one group's texts are waiting and the other group is about to send again.
    Returns the batch sizes the model saw."""
    sizes: list[int] = []

    def run(texts: list[str], request) -> list[str]:
        sizes.append(len(texts))
        time.sleep(0.02)  # the model's work
        return texts

    async def main():
        queue = BatchQueue(run, ThreadPoolExecutor(max_workers=1), gather=64, max_wait_s=0, settle_s=settle_s)

        async def client(i: int) -> None:
            if i >= 4:
                await asyncio.sleep(0.005)  # arrives during the first group's run
            for r in range(rounds):
                assert await queue.submit([f"c{i} r{r}"], ("greedy",)) == [f"c{i} r{r}"]

        await asyncio.gather(*(client(i) for i in range(8)))

    asyncio.run(main())
    return sizes


def test_settling_waits_for_the_clients_just_answered_on_top_of_those_already_waiting() -> None:
    # without settling the two groups take turns (batches of 4); settling after a run waits for the group
    # just answered to join the one already waiting, so every later run takes all eight clients' texts
    assert two_groups(settle_s=0.0) == [4] * 6
    assert two_groups(settle_s=0.3) == [4, 8, 8, 4]
