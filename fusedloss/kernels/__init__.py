"""Framework-free kernels: NumPy (or device) arrays in, arrays out.

``cpu`` and ``cuda`` expose launchers with identical signatures; ``reference`` holds
the float64 NumPy references. ``cuda`` is imported on demand, since importing
``numba.cuda`` costs time that a CPU-only user should not pay.
"""
