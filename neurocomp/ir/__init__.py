"""neurocomp's graph IR: typed nodes with known shapes, a graph, printing and (de)serialisation."""
from neurocomp.ir.nodes import (Node, Input, Linear, Conv2d, SumPool2d, AvgPool2d, BatchNorm, Flatten,
                                LIF, Threshold, LoihiNeuron, NODE_TYPES)
from neurocomp.ir.graph import Graph
from neurocomp.ir.printing import table

__all__ = ["Node", "Input", "Linear", "Conv2d", "SumPool2d", "AvgPool2d", "BatchNorm", "Flatten", "LIF",
           "Threshold", "LoihiNeuron", "NODE_TYPES", "Graph", "table"]
