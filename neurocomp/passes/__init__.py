"""IR passes: plain functions ``Graph -> Graph``. Each one that changes numbers also returns or
stores a record of what it did (in ``graph.meta['passes']``)."""
from neurocomp.passes.fold_bn import fold_batchnorm
from neurocomp.passes.lower_pooling import fold_avgpool
from neurocomp.passes.quantize import quantize
from neurocomp.passes.map_cores import map_cores

__all__ = ["fold_batchnorm", "fold_avgpool", "quantize", "map_cores"]
