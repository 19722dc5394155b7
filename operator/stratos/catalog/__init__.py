"""Static facts about hardware: the GPU catalog (``gpus``) that node facts and estimates look up by
product name: memory, dense bf16 throughput, memory bandwidth, a default hourly price. Data only."""
