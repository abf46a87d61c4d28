"""neurocomp's graph IR: typed nodes with known shapes, a graph, printing and (de)serialisation."""
from neurocomp.ir.nodes import (Node, Input, Linear, Conv2d, SumPool2d, AvgPool2d, BatchNorm, Flatten,
                                LIF, Threshold, CubaLIF, MALIF, Scale, Dense, MAAttention, SpikeAttention, LoihiNeuron, NODE_TYPES,
                                GradedSpikes, Voting, Readout, Add, Concat)
from neurocomp.ir.graph import Graph
from neurocomp.ir.printing import table

# Seconds per time step when a graph must state one (NIR is continuous-time); SpikingJelly has none.
DEFAULT_DT = 1e-3

__all__ = ["Node", "Input", "Linear", "Conv2d", "SumPool2d", "AvgPool2d", "BatchNorm", "Flatten", "LIF",
           "Threshold", "CubaLIF", "MALIF", "Scale", "Dense", "MAAttention", "SpikeAttention", "LoihiNeuron", "NODE_TYPES", "GradedSpikes", "Voting", "Readout", "Add", "Concat", "Graph", "table", "DEFAULT_DT"]
