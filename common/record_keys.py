"""Every Message record and metric key, in one place (kebab-case, as Flower's own keys)."""

ARRAYS = "arrays"                 # ArrayRecord: global weights (to hospitals) / update (back)
CONFIG = "config"                 # ConfigRecord: the round's settings, server -> hospital
METRICS = "metrics"               # MetricRecord: scalar results, hospital -> server
HOSPITAL = "hospital"             # ConfigRecord: who replied (name, index)
STATISTICS = "statistics"         # ArrayRecord: evaluation statistics (common.metrics)

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
