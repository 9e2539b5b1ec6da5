"""train: the user tower and the profile tower, trained with Horovod on Spark executors."""
