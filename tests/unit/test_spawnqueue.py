"""The spawn queue's rules, with time and memory under the test's control (no systemd)."""

import asyncio

import pytest

from appliance import spawnqueue
from appliance.errors import SpawnError
from appliance.spawnqueue import Memory, SpawnQueue, ordinal

GIB = 2**30


class Picture:
    """A memory picture the test changes at will."""

    def __init__(self, cap=None, in_use=None):
        self.memory = Memory(cap, in_use)

    async def __call__(self) -> Memory:
        return self.memory


async def enter_all(queue: SpawnQueue, keys, memory=GIB):
    """Start waiting for each key in order; return tasks and what each was told."""
    told = {k: [] for k in keys}
    tasks = {}
    for k in keys:
        tasks[k] = asyncio.create_task(queue.enter(k, memory, lambda p, w, k=k: told[k].append(
            (p, w))))
        await asyncio.sleep(0)  # arrive in this order
    await asyncio.sleep(0)
    return tasks, told


async def test_slots_are_handed_out_in_arrival_order_and_places_count_down():
    queue = SpawnQueue(2, Picture())
    keys = [f"u{i}" for i in range(6)]
    tasks, told = await enter_all(queue, keys)
    admitted = [k for k in keys if tasks[k].done()]
    assert admitted == ["u0", "u1"]
    assert [p for p, _ in told["u5"]] == [4]
    assert told["u2"][0][1].startswith("You are 1st in line; about ")
    order = list(admitted)
    while len(order) < len(keys):
        queue.launched(order[len(order) - 2], 1.0)
        await asyncio.sleep(0)
        order += [k for k in keys if tasks[k].done() and k not in order]
    assert order == keys
    assert [p for p, _ in told["u5"]] == [4, 3, 2, 1]


async def test_a_start_that_can_never_fit_fails_at_once():
    queue = SpawnQueue(4, Picture(cap=GIB))
    with pytest.raises(SpawnError) as e:
        await queue.enter("big", 2 * GIB, lambda p, w: None)
    assert "2 GiB" in e.value.user_message and "1 GiB" in e.value.user_message


async def test_limits_mode_waits_for_memory_until_a_server_stops():
    queue = SpawnQueue(4, Picture(cap=2 * GIB))
    tasks, told = await enter_all(queue, ["a", "b", "c"])
    assert tasks["a"].done() and tasks["b"].done() and not tasks["c"].done()
    assert told["c"][-1][1].startswith("Waiting for memory: 2 GiB of 2 GiB in use")
    queue.launched("a")
    await asyncio.sleep(0)
    assert not tasks["c"].done()  # a still runs and holds its memory
    queue.stopped("a")
    await asyncio.sleep(0)
    assert tasks["c"].done()


async def test_usage_mode_counts_what_running_servers_use(monkeypatch):
    monkeypatch.setattr(spawnqueue, "MEMORY_POLL_SECONDS", 0.01)
    picture = Picture(cap=4 * GIB, in_use=int(3.5 * GIB))
    queue = SpawnQueue(4, picture)
    tasks, told = await enter_all(queue, ["a"])
    assert not tasks["a"].done()  # 3.5 GiB used + 1 GiB does not fit under 4 GiB
    picture.memory = Memory(4 * GIB, 2 * GIB)  # servers gave memory back, no event said so
    await asyncio.wait_for(tasks["a"], 1)
    queue.close()


async def test_a_cancelled_wait_gives_its_place_to_the_next():
    queue = SpawnQueue(1, Picture())
    tasks, _ = await enter_all(queue, ["a", "b", "c"])
    tasks["b"].cancel()
    await asyncio.sleep(0)
    queue.launched("a")
    await asyncio.sleep(0)
    assert tasks["c"].done() and queue.waiting == 0


async def test_a_restart_right_after_a_start_waits_out_the_cool_down():
    queue = SpawnQueue(4, Picture(), cooldown=0.3)
    await queue.enter("a", GIB, lambda p, w: None)
    queue.launched("a")
    queue.stopped("a")
    told = []
    loop = asyncio.get_running_loop()
    began = loop.time()
    await queue.enter("a", GIB, lambda p, w: told.append(w))
    assert loop.time() - began >= 0.25
    assert "starting again in 1 s" in told[0]


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 37, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "37th", "101st",
        "111th"]


async def test_usage_mode_counts_starts_admitted_since_the_last_reading():
    """A burst must not all fit because the reading was taken before any of it started."""
    queue = SpawnQueue(1, Picture(cap=4 * GIB, in_use=GIB))
    tasks, _ = await enter_all(queue, ["a", "b", "c", "d"])
    for key in ("a", "b", "c"):  # each launches and is ready before the next is admitted
        queue.launched(key)
        await asyncio.sleep(0)
    # 1 GiB used at the reading + a, b, c at their limits: d (1 GiB more) must wait.
    assert [k for k in "abcd" if tasks[k].done()] == ["a", "b", "c"]
    queue.close()


class Classroom:
    """Servers that each use `each` once launched, on a machine that uses `base` besides."""

    def __init__(self, cap, each, base=0, machine_wide=False):
        self.cap, self.each, self.base, self.machine_wide = cap, each, base, machine_wide
        self.running = 0

    async def __call__(self) -> Memory:
        return Memory(self.cap, self.base + self.running * self.each, self.machine_wide)


async def burst(queue: SpawnQueue, picture: Classroom, count: int) -> list[str]:
    """count starts at once, each launched as soon as admitted; who got in."""
    keys = [f"s{i}" for i in range(count)]
    tasks, _ = await enter_all(queue, keys)
    for _ in range(200):
        for k in keys:
            if tasks[k].done() and k in queue._launching:
                picture.running += 1
                queue.launched(k)
        await asyncio.sleep(0.002)
    for task in tasks.values():
        task.cancel()
    queue.close()
    return [k for k in keys if tasks[k].done() and not tasks[k].cancelled()]


@pytest.mark.parametrize("machine_wide", [False, True])
async def test_a_class_of_small_servers_fills_the_memory_not_a_tenth_of_it(
        monkeypatch, machine_wide):
    """1 GiB limits, 100 MiB used each, a 4 GiB cap: about 30 start, not 3; where only the
    whole machine's use is known, the 2 GiB it used before any server ran are not theirs."""
    monkeypatch.setattr(spawnqueue, "MEMORY_POLL_SECONDS", 0.001)
    base = 2 * GIB if machine_wide else 0
    picture = Classroom(4 * GIB, 100 * 2**20, base, machine_wide)
    admitted = await burst(SpawnQueue(4, picture), picture, 40)
    # Each new start still needs its full limit free: (4 GiB - 1 GiB) / 100 MiB = 30.
    assert 28 <= len(admitted) <= 31, len(admitted)
    assert picture.running * picture.each + GIB <= 4 * GIB + 4 * picture.each


async def test_a_whole_machine_reading_with_servers_already_running_counts_all_of_it(
        monkeypatch):
    """Adopted servers at start-up: no reading without servers, so the whole machine counts."""
    monkeypatch.setattr(spawnqueue, "MEMORY_POLL_SECONDS", 0.001)
    picture = Classroom(4 * GIB, 100 * 2**20, 2 * GIB, machine_wide=True)
    queue = SpawnQueue(4, picture)
    queue.reserve("adopted", GIB)
    admitted = await burst(queue, picture, 40)
    assert len(admitted) <= 11, len(admitted)  # the 11th when (4 - 2 - 1 GiB) / 100 MiB ran
