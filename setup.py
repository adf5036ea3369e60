from setuptools import find_packages, setup

TENSORFLOW = "tensorflow>=2.16"
TENSORFLOW_CPU = "tensorflow-cpu>=2.16"

setup(
    name="fusedloss",
    version="0.1.0",
    description="Fused loss-and-gradient kernels (Numba CPU and CUDA) as drop-in Keras losses",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fusedloss", "fusedloss.*"]),
    # TensorFlow is an extra, not a requirement: "tensorflow" and "tensorflow-cpu" are
    # different distributions of the same module, and requiring one would install it
    # over the other that a user already has.
    install_requires=["numpy>=1.26", "numba>=0.60", "keras>=3.0"],
    extras_require={
        "tensorflow": [TENSORFLOW],
        "cpu": [TENSORFLOW_CPU],
        # numba-cuda with its CUDA toolkit (NVVM, NVRTC, runtime) from pip.
        "cuda12": [TENSORFLOW, "numba-cuda[cu12]>=0.30"],
        "cuda13": [TENSORFLOW, "numba-cuda[cu13]>=0.30"],
        # The tests run the CUDA kernels in numba's simulator and compile them to PTX,
        # so they need numba-cuda with NVVM, but no GPU.
        # ... and the benchmark suite's smoke run, which needs the bench tools too.
        "test": [
            TENSORFLOW_CPU,
            "numba-cuda[cu13]>=0.30",
            "pytest>=8",
            # Tests run in one process per core: numba compiles most of the suite's time,
            # one kernel at a time, and a kernel one worker compiled the other loads from
            # the cache on disk.
            "pytest-xdist>=3",
            "hypothesis>=6.100",
            "pytest-benchmark>=4",
            "matplotlib>=3.8",
            "rich>=13",
            # Independent references for the softmax cross-entropies: PyTorch's
            # cross_entropy (label_smoothing, ignore_index) and a real data set for the
            # model.fit parity test (scikit-learn's digits ship with the package). The
            # pin is the CPU build on this project's machines' wheel disk; a looser range
            # resolves to a multi-GB CUDA build there.
            "torch==2.13.0",
            "scikit-learn>=1.3",
        ],
        "bench": [TENSORFLOW_CPU, "pytest>=8", "pytest-benchmark>=4", "matplotlib>=3.8", "rich>=13"],
    },
)
