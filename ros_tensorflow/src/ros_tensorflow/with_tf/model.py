"""ModelWrapper: train and predict a Keras model safely from any thread."""

import contextlib
import math
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from ros_tensorflow.tf_free.any_model import classic_specs
from ros_tensorflow.tf_free.samples import (
    as_float32,
    as_labelled_samples,
    as_samples,
    as_target_samples,
    check_output,
    check_validation_split,
    shape_of,
)
from ros_tensorflow.tf_free.tasks import CLASSIFICATION, REGRESSION, resolve_task, task_of_loss
from ros_tensorflow.with_tf.callbacks import StopOnDivergence
from ros_tensorflow.with_tf.conversion import ConverterProcess, LiteRtServing
from ros_tensorflow.with_tf.tf_context import TensorFlowContext

ARCHITECTURES = ("auto", "mlp", "cnn")


TARGET_SCALE = "target_scale"  # a fresh regression model's last layer: fitted to each goal's targets


def build_classifier(input_shape=10, output_dim=2, hidden_units=32, learning_rate=0.0, architecture="auto"):
    """build_model of a classifier."""
    return build_model(input_shape, output_dim, hidden_units, learning_rate, architecture)


def build_model(
    input_shape=10,
    output_dim=2,
    hidden_units=32,
    learning_rate=0.0,
    architecture="auto",
    task=CLASSIFICATION,
    loss="mse",
):
    """A fresh model for samples of input_shape (an int: input_dim), compiled (compile_for).

    classification: output_dim probabilities (a softmax). regression: output_dim values, a linear layer that
    learns standardised values followed by TARGET_SCALE, a fixed (untrained) diagonal layer that multiplies them
    by the targets' standard deviation and adds their mean: targets of any scale train as if of scale 1, and every
    export answers in the user's units.

    mlp, the tutorial's: one hidden ReLU layer and a softmax output (samples of rank > 1 flattened first).
    cnn, for images (height, width, channels) of 16-128 px: three 3x3 convolutions (16, 32 and 64 filters, ReLU)
    each followed by 2x2 max pooling, global max pooling, then the same hidden layer and output. Global pooling
    finds an object wherever it is in the frame: with Flatten instead, 31 frames a class of a drawn shape on noise
    were learnt by heart (training accuracy 1.0) and classified at chance live. A regression cnn flattens instead:
    global pooling forgets where things are, and steering from a camera is all about where. auto: cnn for rank 3.
    """
    shape = shape_of(input_shape)
    if architecture == "auto":
        architecture = "cnn" if len(shape) == 3 else "mlp"
    if architecture == "cnn":
        if len(shape) != 3:
            raise ValueError(f"architecture cnn needs a sample shape (height, width, channels), got {list(shape)}")
        features = []
        for filters in (16, 32, 64):
            features += [
                keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(),
            ]
        # A class is what is in the frame, wherever it is; a value often depends on where (steer towards a line)
        features.append(keras.layers.GlobalMaxPooling2D() if task == CLASSIFICATION else keras.layers.Flatten())
    elif architecture == "mlp":
        features = [keras.layers.Flatten()] if len(shape) > 1 else []
    else:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    model = keras.Sequential(
        [
            keras.Input(shape=shape),
            *features,
            keras.layers.Dense(hidden_units, activation="relu"),
            *_output_layers(task, output_dim),
        ]
    )
    compile_for(model, task, learning_rate, "adam" if architecture == "cnn" or task == REGRESSION else "sgd", loss)
    return model


def _output_layers(task, output_dim):
    if task == CLASSIFICATION:
        return [keras.layers.Dense(output_dim, activation="softmax")]
    return [
        keras.layers.Dense(output_dim, name="standardised_output"),
        keras.layers.Dense(output_dim, kernel_initializer="identity", trainable=False, name=TARGET_SCALE),
    ]


def fit_target_scale(model, y):
    """Fit a regression model's TARGET_SCALE to targets y (its mean and standard deviation per output). Once fitted,
    the layer before it changes to match: a trained model computes the same function as before, now scaled for y; a
    fresh one starts at the targets' mean."""
    names = [layer.name for layer in model.layers]
    if TARGET_SCALE not in names or names.index(TARGET_SCALE) == 0:
        return  # a user's own regression model: its outputs are in its units already
    scale_layer = model.layers[names.index(TARGET_SCALE)]
    before = model.layers[names.index(TARGET_SCALE) - 1]
    kernel, bias = before.get_weights()
    old_scale, old_mean = scale_layer.get_weights()
    old_std = np.diag(old_scale)
    mean, std = y.mean(axis=0), y.std(axis=0)
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # a constant target: scale 1
    if np.any(old_scale != np.eye(len(old_std))) or np.any(old_mean):  # fitted before: keep what it learnt
        # out = (h W + b) s + m for the old (s, m) and the new: W' = W s / s', b' = (b s + m - m') / s'
        before.set_weights([kernel * old_std / std, (bias * old_std + old_mean - mean) / std])
    scale_layer.set_weights([np.diag(std).astype(np.float32), mean.astype(np.float32)])


DEFAULT_LEARNING_RATES = {"sgd": 0.1, "adam": 0.003}


def shuffled_batches(x, y, batch_size):
    """(x, y) in batches, each epoch all of it in a new order, endlessly: fit(steps_per_epoch=...) then keeps one
    iterator. Given arrays, Keras makes a new one each epoch: 12-28 ms between an epoch's end and its next batch
    (1.2 ms this way), which a cancel waited for, and half the speed on small data (README: Benchmark). One
    permutation per epoch and a gather per batch, as Keras does: a shuffle buffer would copy the data again."""
    size = len(x)

    def one_epoch(x, y):
        batches = tf.data.Dataset.from_tensor_slices(tf.random.shuffle(tf.range(size))).batch(batch_size)
        return batches.map(lambda indices: (tf.gather(x, indices), tf.gather(y, indices)))

    options = tf.data.Options()
    # tf.data's autotuning thread: fit's end waited for it to stop when the iterator went, up to a second (a cancel
    # took 0.45-0.99 s in 3 of 120, `make bench ROWS=training` once 951 ms; 80 of 80 within 14 ms without it). The
    # pipeline has nothing to tune: one map, prefetch of 2.
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensors((x, y)).repeat().flat_map(one_epoch).prefetch(2).with_options(options)


def keras_predictor(model, scope=contextlib.nullcontext):
    """predict(x) -> the output of a Keras model for a chunk of samples, called in scope() (a TensorFlowContext's,
    for a model built on a device)."""

    def predict(x):
        with scope():
            return model.predict_on_batch(np.asarray(x, np.float32))

    return predict


def compile_for(model, task, learning_rate=0.0, optimizer="sgd", loss="mse"):
    """classification: sparse categorical cross-entropy and accuracy, with SGD (the tutorial's MLP) or Adam (the
    cnn: SGD at 0.1 reached accuracy 1.0 at epochs 2-4, then fell back to 0.5). regression: loss (mse, mae or huber)
    and MAE, with Adam, whose steps do not grow with the loss's scale; learning_rate 0: the optimizer's rate above."""
    rate = learning_rate or DEFAULT_LEARNING_RATES[optimizer]
    model.compile(
        optimizer=keras.optimizers.SGD(rate) if optimizer == "sgd" else keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy" if task == CLASSIFICATION else loss,
        metrics=["accuracy"] if task == CLASSIFICATION else ["mae"],
    )


def task_of_model(model):
    """The task a Keras model says it has: its compiled loss's, else a softmax or sigmoid output's
    (classification); None when it does not say (an uncompiled linear output: logits, or values)."""
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        loss = model.loss
        name = loss if isinstance(loss, str) else getattr(loss, "name", None) or getattr(loss, "__name__", str(loss))
        found = task_of_loss(name)
        if found:
            return found
    activation = getattr(model.layers[-1], "activation", None) if model.layers else None
    if getattr(activation, "__name__", "") in ("softmax", "sigmoid"):
        return CLASSIFICATION
    return None


class NotTrainableError(RuntimeError):
    """The model is served for prediction only."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or Inf; the weights from before the training are back in place."""


class _ServingCopy:
    """A clone of the model with its own predict function, traced once for every batch size."""

    def __init__(self, model, input_shape, on_trace):
        self.model = model
        self.lock = threading.Lock()
        self.served = 0

        def forward(x):
            on_trace()
            return self.model(x, training=False)

        self._function = tf.function(forward).get_concrete_function(tf.TensorSpec([None, *input_shape], tf.float32))
        # TensorFlow sets up the first two batch shapes a function sees (~15 ms each): here, not in a prediction.
        for k in (1, 2):
            self._function(tf.zeros([k, *input_shape]))

    def predict(self, x):
        """Call with self.lock held."""
        self.served += len(x)
        return self._function(tf.constant(x, tf.float32)).numpy()


class ModelWrapper:
    """A Keras model that trains on one thread while other threads predict.

    Predictions never run on the model being trained: they use one of two
    serving copies. At the end of every epoch (and of the training) the
    trained weights are copied into the copy not in use, which then becomes
    the one in use, so a prediction always sees one whole set of weights and
    never waits for a training batch.

    A model that is not trainable (a SavedModel) is served as it is.
    """

    def __init__(
        self,
        model=None,
        trainable=True,
        input_dim=10,
        output_dim=2,
        hidden_units=32,
        learning_rate=0.0,
        input_shape=None,
        architecture="auto",
        serving_backend="tensorflow",
        converter=None,
        log=None,
        task="",
        loss="mse",
    ):
        """serving_backend litert: converter (a ConverterProcess, one per node) makes each commit's TFLite model.
        task: a fresh model's ('': classification); a model given is its own task (task_of_model), else task
        (TaskError if they differ). loss: a fresh regression model's."""
        if not tf.executing_eagerly():
            raise RuntimeError("Keras 3 needs eager execution; do not call tf.compat.v1.disable_eager_execution()")
        self.context = TensorFlowContext()
        self.trainable = trainable
        self.trace_count = 0
        self.task = resolve_task(task, task_of_model(model) if model is not None else None)
        with self.context.scope():
            self.model = model or build_model(
                input_shape or input_dim, output_dim, hidden_units, learning_rate, architecture, self.task, loss
            )
            # Plain attributes: Keras's shape properties cost a microsecond a read, on every prediction.
            self.input_shape = tuple(int(size) for size in self.model.inputs[0].shape[1:])
            self.input_dim = math.prod(self.input_shape)  # values per sample
            self.output_dim = int(self.model.outputs[0].shape[-1])
            self.tensor_inputs, self.tensor_outputs = classic_specs(self.input_shape, self.output_dim)
            if trainable and not self.model.compiled:
                compile_for(self.model, self.task, learning_rate, "sgd" if self.task == CLASSIFICATION else "adam")
            serving_models = [keras.models.clone_model(self.model) for _ in range(2)] if trainable else [self.model]
            self._copies = [_ServingCopy(m, self.input_shape, self._count_trace) for m in serving_models]
        self._active = 0
        self._train_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self.committed_at = None
        self.commit_count = 0  # which commit predictions see: LiteRT answers only once it serves this one
        self.class_names = []  # one per class where known: saved beside the model file and loaded with it
        self.version = 0  # the exported version these weights are (ModelKeeper), 0 while they are none
        self.validation_data = None  # (x, y) the last training validated on
        self._before_training = None
        self.litert = None
        self.served_by_litert = 0
        self._litert_count_lock = threading.Lock()
        # A SavedModel stays with TensorFlow: the converter rebuilds models from their Keras config, and Keras's
        # safe mode refuses to rebuild one that loads an external SavedModel.
        if serving_backend == "litert" and trainable:
            self._own_converter = None if converter else ConverterProcess()
            self.litert = LiteRtServing(self.model.to_json(), converter or self._own_converter, log)
        elif serving_backend not in ("tensorflow", "litert"):
            raise ValueError(f"serving_backend must be litert or tensorflow, got {serving_backend!r}")
        self.commit()

    @property
    def predictions_served(self):
        """Samples predicted so far."""
        return sum(copy.served for copy in self._copies) + self.served_by_litert

    @property
    def untrainable_reason(self):
        return "a SavedModel, served for prediction only"

    @property
    def serving(self):
        """Which backend answers now, and for which commit."""
        if self.litert and self.litert.model_for(self.commit_count) is not None:
            return f"litert, commit {self.commit_count}"
        if self.litert and self.litert.failed is None:
            return f"tensorflow, commit {self.commit_count} (litert converting)"
        return f"tensorflow, commit {self.commit_count}"

    def close(self):
        """Stop the LiteRT conversion thread (the model is being replaced), and the converter if it is this model's."""
        if self.litert:
            self.litert.close()
            if self._own_converter:
                self._own_converter.close()

    def _count_trace(self):
        self.trace_count += 1

    def commit(self, epoch_end=False):
        """Publish the trained weights to predictions, all at once; epoch_end: more commits follow soon."""
        if not self.trainable:
            if self.committed_at is None:
                self.committed_at, self.commit_count = time.time(), 1
                if self.litert:
                    self.litert.submit(1, self.model.get_weights())
            return
        with self._commit_lock:
            weights = self.model.get_weights()
            standby = 1 - self._active
            with self._copies[standby].lock:
                self._copies[standby].model.set_weights(weights)
            self._active = standby
            self.committed_at = time.time()
            self.commit_count += 1
            self.version = 0  # new weights: no version until they are exported
            if self.litert:
                self.litert.submit(self.commit_count, weights, epoch_end)

    def served_predictor(self):
        """predict(x) -> output with the weights predictions see now, which a training under way does not change:
        LiteRT's model of the served commit when it serves it, else a Keras copy of its own, so that long work (an
        evaluation) holds no lock that predictions wait for longer than one LiteRT call."""
        if not self.trainable:
            return self.predict_samples
        litert_model = self.litert.model_for(self.commit_count) if self.litert else None
        if litert_model is not None:  # the served model itself: a new commit gets a new one, this one never changes
            # its lock is held for microseconds a chunk; Keras's predict_on_batch took 40 times longer
            return lambda x: litert_model.predict(np.asarray(x, np.float32))
        copy = self._copies[self._active]
        with copy.lock:
            weights = copy.model.get_weights()
        with self.context.scope():
            clone = keras.models.clone_model(self.model)
            clone.set_weights(weights)
        return keras_predictor(clone, self.context.scope)

    def train(self, x, y, epochs, batch_size=32, validation_split=0.0, callbacks=(), serve=True):
        """Fit on (x, y), shuffled first, the validation split taken from the end (kept in validation_data).

        Blocks while another training runs. Returns the Keras History. TrainingDiverged if the loss or the weights
        became NaN or Inf: then the weights and the optimizer's state from before are restored and committed, and
        no diverged commit was ever served. serve=False: predictions keep the weights from before (no commit)
        until promote(), or discard() puts those weights back in the model.
        """
        if not self.trainable:
            raise NotTrainableError("the model was loaded from a SavedModel and is served for prediction only")
        x, y = self.checked_samples(x, y)
        check_validation_split(len(x), validation_split)
        order = np.random.default_rng().permutation(len(x))
        n_train = int(np.floor(len(x) * (1.0 - validation_split))) if validation_split > 0 else len(x)
        self.validation_data = (x[order][n_train:], y[order][n_train:])
        divergence = StopOnDivergence()
        commit_each_epoch = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: divergence.reason or not serve or self.commit(epoch_end=True)
        )
        with self._train_lock, self.context.scope():
            before = self.model.get_weights(), [v.numpy() for v in self.model.optimizer.variables]
            self._before_training, version_before = before, self.version
            if self.task == REGRESSION:
                fit_target_scale(self.model, y[order][:n_train])
            failed = True
            try:
                train_x, train_y = x[order][:n_train].astype(np.float32), y[order][:n_train]
                history = self.model.fit(
                    shuffled_batches(train_x, train_y, batch_size),
                    epochs=epochs,
                    steps_per_epoch=math.ceil(n_train / batch_size),
                    shuffle=False,  # shuffled_batches does
                    validation_data=self._validation_batches(batch_size) if validation_split > 0 else None,
                    callbacks=[divergence, commit_each_epoch, *callbacks],  # the caller's see the epoch served
                    verbose=0,
                )
                failed = False
            finally:
                if divergence.reason or (failed and not serve):  # nothing of this goal may stay: as before it
                    self._restore(*before)
                if serve or divergence.reason:
                    self.commit()
                if divergence.reason:  # the weights served are those of before again: so is their version
                    self.version = version_before
        if divergence.reason:
            raise TrainingDiverged(divergence.reason)
        return history

    def _validation_batches(self, batch_size):
        x, y = self.validation_data
        return tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y)).batch(batch_size)

    def checked_samples(self, x, y, max_samples=0):
        """(x, y) as this model trains on them: labels for a classifier, targets for a regression model."""
        if self.task == CLASSIFICATION:
            return as_labelled_samples(x, y, self.input_shape, self.output_dim, max_samples)
        return as_target_samples(x, y, self.input_shape, self.output_dim, max_samples)

    def trained_predictor(self):
        """predict(x) of the model as trained (train(serve=False) has not committed it)."""
        return keras_predictor(self.model, self.context.scope)

    def promote(self):
        """Serve the weights a train(serve=False) made."""
        self.commit()

    def discard(self):
        """Put back the weights (and optimizer state) from before the last train(serve=False): predictions never
        saw the trained ones."""
        with self.context.scope():
            self._restore(*self._before_training)

    def _restore(self, weights, optimizer_state):
        """Weights and optimizer variables as they were; variables the training created (an optimizer built on
        its first step: momenta) start from zero, as a fresh optimizer's do."""
        self.model.set_weights(weights)
        for i, variable in enumerate(self.model.optimizer.variables):
            variable.assign(optimizer_state[i] if i < len(optimizer_state) else np.zeros(variable.shape))

    def predict(self, x):
        """Model output, shape (k, output_dim), for k samples given flat or as (k, *input_shape); ValueError for
        NaN or Inf outputs."""
        return check_output(self.predict_samples(as_samples(x, self.input_shape)))

    def run_tensors(self, arrays):
        """predict_tensors: the one input's samples (checked by feeds) to the one output, as predict_samples."""
        return [self.predict_samples(arrays[0])]

    def predict_samples(self, x):
        """Output for samples as_samples() has already checked (the stream checks each message on arrival), as
        TfliteModel's: prediction_rows() refuses NaN or Inf outputs, so the serving face checks them once."""
        litert_model = self.litert.model_for(self.commit_count) if self.litert else None
        if litert_model is not None:
            output = litert_model.predict(as_float32(x))
            with self._litert_count_lock:
                self.served_by_litert += len(x)
        else:
            copy = self._copies[self._active]
            with copy.lock, self.context.scope():
                output = copy.predict(x)
        return output
