"""Two-tower match generation as a distributed Spark batch job.

Jobs in ``jobs/`` are thin entry points; the logic lives here as plain functions over
DataFrames and arrays. Heavy optional imports (TensorFlow, Horovod, FAISS) happen inside
the functions that need them, so ``lib`` imports on a driver that lacks them.
"""
