"""Every Message record and metric key, in one place (kebab-case, as Flower's own keys)."""

ARRAYS = "arrays"                 # ArrayRecord: global weights (to hospitals) / update (back)
CONFIG = "config"                 # ConfigRecord: the round's settings, server -> hospital
METRICS = "metrics"               # MetricRecord: scalar results, hospital -> server
HOSPITAL = "hospital"             # ConfigRecord: who replied (name, index)
STATISTICS = "statistics"         # ArrayRecord: evaluation statistics (common.metrics)
DECLINED = "declined"             # ConfigRecord: why a hospital declined the round
REASON = "reason"
EPSILON_PATIENT = "epsilon-patient"    # epsilon spent so far, after this round
EPSILON_HOSPITAL = "epsilon-hospital"
BUDGET_EPSILON = "budget-epsilon"       # the hospital's own budget, for the privacy statement
BUDGET_DELTA = "budget-delta"

SERVER_ROUND = "server-round"     # injected by the server in every config
NUM_EXAMPLES = "num-examples"     # Flower's weighting key; absent from DP replies
HOSPITAL_NAME = "name"
HOSPITAL_INDEX = "index"
TRAIN_LOSS = "train-loss"

# Round settings the server sends (ConfigRecord keys).
TASK = "task"
HOSPITALS = "hospitals"
SEED = "seed"
PARTITION = "partition"
DIRICHLET_ALPHA = "dirichlet-alpha"
LOCAL_EPOCHS = "local-epochs"
BATCH_SIZE = "batch-size"
LEARNING_RATE = "learning-rate"
LOCAL_STEPS = "local-steps"
RUN_ID = "run-id"
PLANNED_ROUNDS = "num-server-rounds"
DP_MODE = "dp.mode"
CLIPPING_NORM = "dp.clipping-norm"
UPDATE_CLIPPING_NORM = "dp.update-clipping-norm"

# Secure aggregation: the request/reply of a protocol stage, and the custom train actions
# (action names must be Python identifiers: messages are "train.secagg_advertise", ...).
SECAGG = "secagg"
SECAGG_NEXT = "secagg-next"       # the next round's advertise-keys, riding on an unmask message
EVALUATE_RECEIVED = "evaluate-received"  # also evaluate the weights this message carries
SECAGG_ADVERTISE = "secagg_advertise"
SECAGG_SHARE = "secagg_share"
SECAGG_MASK = "secagg_mask"
SECAGG_UNMASK = "secagg_unmask"
SECAGG_ENABLED = "secagg.enabled"
SECAGG_THRESHOLD = "secagg.threshold"
SECAGG_CLIP_BOUND = "secagg.clip-bound"
SECAGG_SCALE = "secagg.scale"
NOISE_MODE = "dp.noise-mode"
WEIGHTING = "weighting"
NUM_CLIPPED = "secagg-clipped"   # coordinates clipped by the fixed-point encoding
FEDCARE_VERSION = "fedcare-version"  # the server's fedcare version; a hospital refuses another
NOISE_STDDEV = "noise-stddev"  # hospital-level DP: the stddev of the noise added to the update
CLIP_UPDATES = "clip-updates"  # dp none: hospitals clip updates to dp.update-clipping-norm
