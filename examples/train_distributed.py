"""Data-parallel training of a small classifier on several processes.

    mpirun -n 4 python examples/train_distributed.py            # one machine
    mpirun -H host1:2,host2:2 python examples/train_distributed.py  # two machines
    python examples/train_distributed.py                        # one process

Every rank runs this same script on the same arrays; fit(distributed=True)
gives each rank its slice of every global batch of 32 * size() samples and
averages the gradients after each backward pass. Rank 0 writes the
backups and the best model and prints the progress. After a crash, the same
command resumes from the last backup, with the same or another number of
ranks (the restored learning rate is the one of the run that wrote it).
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.datasets import load_digits

import fusednn as fd

fd.distributed.init()
rank, size = fd.distributed.rank(), fd.distributed.size()
fd.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, size)))  # one share of the cores

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32)
x_val, y_val = x[1500:], y[1500:]
# the training set must split into size() equal shards: keep a multiple of it
n = 1500 - 1500 % size
x, y = x[:n], y[:n]

model = fd.Sequential([
    fd.Input((64,)),
    fd.layers.Dense(128, use_bias=False, kernel_initializer="he_normal"),
    fd.layers.BatchNormalization(synchronized=True),  # statistics of the global batch
    fd.layers.Activation("relu"),
    fd.layers.Dropout(0.2),                           # a different mask on every rank
    fd.layers.Dense(10, activation="softmax"),
])
# the global batch grows with size(): scale the learning rate with it (Goyal et al. 2017)
model.compile(optimizer=fd.optimizers.Adam(1e-3 * size),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])

history = model.fit(
    x, y, batch_size=32, epochs=10, validation_data=(x_val, y_val), seed=0, verbose=2,
    distributed=True,
    callbacks=[
        # rank 0 backs up every epoch and, when this script runs again after a crash,
        # restores the last backup; fit then hands its state to every rank
        fd.callbacks.BackupAndRestore("digits-backup"),
        fd.callbacks.EarlyStopping(monitor="val_loss", patience=3),  # all ranks stop together
        fd.callbacks.ModelCheckpoint("digits-best.safetensors", save_best_only=True),
    ])
if rank == 0:
    print(f"{size} rank(s): val_accuracy {history.history['val_accuracy'][-1]:.3f}")
