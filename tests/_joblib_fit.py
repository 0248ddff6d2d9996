"""A fit run inside joblib workers by tests/test_threads.py (importable by
the workers, unlike a function defined in a test module)."""

import numpy as np


def fit_once(seed):
    import fusednn as fd

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((512, 20)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    init = fd.initializers.HeNormal(seed=seed)
    model = fd.Sequential([fd.layers.Dense(32, activation="elu", kernel_initializer=init),
                           fd.layers.Dense(2, kernel_initializer=init)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=64, verbose=0, seed=seed)
    return model.get_weights(), fd.num_threads()
