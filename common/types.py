"""Small shared type aliases."""

import numpy as np
import numpy.typing as npt

NDArray = npt.NDArray[np.floating]
NDArrays = list[NDArray]
