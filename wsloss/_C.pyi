# The compiled extension (csrc/ops.cpp). Importing it registers torch.ops.wsloss.
from typing import Dict, Union

def build_info() -> Dict[str, Union[str, int]]: ...
