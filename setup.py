"""The ``lib`` package of the two-tower match pipeline.

The pinned environment (with Horovod built from source) is made by scripts/bootstrap.sh;
installing this package alone (pip install .) gives the library for a cluster image that
already has that stack. The extras name the heavy parts a driver may lack.
"""
from setuptools import find_packages, setup

setup(
    name="twotower-matches",
    version="0.1.0",
    description="Two-tower match generation as a distributed Spark batch job",
    packages=find_packages(include=["lib", "lib.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=["pyspark==4.0.1", "delta-spark==4.0.1", "numpy==1.26.4", "pandas==2.2.3",
                      "pyarrow==14.0.2", "PyYAML>=6,<7"],
    extras_require={
        "train": ["tensorflow==2.15.1", "petastorm==0.13.1", "horovod==0.28.1"],
        "index": ["faiss-cpu==1.15.1"],
    },
)
