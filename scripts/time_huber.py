"""Huber forward+backward (mean-reduced) at 1e5, 1e6, 1e7 float32 elements: the bridge
against keras.losses.huber in tf.function and under XLA, interleaved in one run, with the
memory floor from a NumPy copy measured in the same run. `PYTHONPATH=. python scripts/time_huber.py`"""
import time, numpy as np, tensorflow as tf, keras, fusedloss
fusedloss.set_min_fused_size(0)
def make(loss, jit=False):
    @tf.function(jit_compile=jit)
    def step(t, p):
        with tf.GradientTape() as tape:
            tape.watch(p); l = tf.reduce_mean(loss(t, p))
        return l, tape.gradient(l, p)
    return step
fns = {"fused": make(fusedloss.huber), "tf.function": make(keras.losses.huber), "XLA": make(keras.losses.huber, True)}
src = np.random.default_rng(0).normal(size=10**7).astype(np.float32)
buf = np.empty_like(src); s=time.perf_counter()
for _ in range(5): np.copyto(buf, src)
bw = 2*src.nbytes*5/(time.perf_counter()-s)
print(f"copy bandwidth {bw/1e9:.1f} GB/s")
for n in (10**5, 10**6, 10**7):
    shape = (n // 1000, 1000)
    t = tf.constant(np.random.default_rng(1).normal(size=shape).astype(np.float32)); p = tf.constant(np.random.default_rng(2).normal(size=shape).astype(np.float32))
    times = {k: [] for k in fns}
    for f in fns.values(): f(t, p); f(t, p)
    for _ in range(9):
        for k, f in fns.items():
            s = time.perf_counter(); r = f(t, p); r[1].numpy(); times[k].append(time.perf_counter() - s)
    med = {k: np.median(v)*1e3 for k, v in times.items()}
    floor = 12 * n / bw * 1e3
    print(f"n={n:.0e} " + " ".join(f"{k} {v:.2f} ms" for k, v in med.items()) + f"  XLA/fused {med['XLA']/med['fused']:.2f}x  tf.function/fused {med['tf.function']/med['fused']:.2f}x  floor {floor:.2f} ms ({med['fused']/floor:.2f}x floor)")
