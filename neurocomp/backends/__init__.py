"""Back-ends: emit the quantized IR to Lava processes, netx HDF5 or NIR."""
