"""The output pool: aligned buffers, reused only when nothing refers to them."""

import threading

import numpy as np

from fusedloss.buffers import ALIGNMENT, BufferPool


def address(array):
    return array.__array_interface__["data"][0]


def test_buffers_are_aligned_contiguous_and_shaped():
    pool = BufferPool()
    for shape, dtype in [((3, 5), np.float32), ((7,), np.float64), ((), np.float32), ((2, 3, 4), np.float16)]:
        array = pool.take(shape, dtype)
        assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous
        assert address(array) % ALIGNMENT == 0


def test_a_released_buffer_is_reused():
    pool = BufferPool()
    first = pool.take((100,), np.float32)
    first_address = address(first)
    del first
    assert address(pool.take((100,), np.float32)) == first_address


def test_a_live_buffer_or_any_view_of_it_is_never_handed_out_again():
    pool = BufferPool()
    kept = pool.take((100,), np.float32)
    kept[:] = 1.0
    second = pool.take((100,), np.float32)
    assert address(second) != address(kept)
    view = kept[10:20]  # a view alone keeps the memory busy
    del kept
    third = pool.take((100,), np.float32)
    assert address(third) != address(view) - 40
    second[:] = 2.0
    third[:] = 3.0
    np.testing.assert_array_equal(view, 1.0)


def test_at_most_per_size_idle_buffers_are_kept():
    pool = BufferPool(per_size=2)
    live = [pool.take((8,), np.float64) for _ in range(5)]
    assert len({address(a) for a in live}) == 5
    assert len(pool._owners[64]) == 2


def test_threads_never_share_a_buffer():
    pool = BufferPool()
    seen, lock, all_taken = [], threading.Lock(), threading.Barrier(8)

    def worker():
        held = [pool.take((256,), np.float32) for _ in range(20)]
        with lock:
            seen.extend(address(a) for a in held)
        all_taken.wait()  # hold everything until every thread has taken its share

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 160
