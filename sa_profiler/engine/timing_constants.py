"""The time model's constants (engine/timing.py), fitted on measured steps. Generated: do not edit.

Command: python -m sa_profiler.validation.timing_fit
Fitted on: reports/validation/nvidia-h100-80gb-hbm3-2.11.0-cu130.csv (416 measured rows: CUDA events,
  median of 3 after a warm-up, torch 2.11.0+cu130)
Checked on: reports/validation/nvidia-h100-80gb-hbm3-2.11.0-cu130-heldout.csv (352 rows, shapes the fit never saw)
EFFICIENCY: fraction of the card's peak FLOP rate per kind of op; BANDWIDTH_EFFICIENCY: fraction
of its memory bandwidth (softmax, and "*" for every other op); LAUNCH_S: host and launch cost per
op, by direction and family (a view launches no kernel but is dispatched); STEP_S: per step, by mode; HOST_S: per host call
that no dispatched op shows (timing.host_calls).
"""

CARD = 'NVIDIA H100 80GB HBM3'
LAUNCH_S = {
    'backward attention': 1.211e-05,
    'backward gemm': 1.154e-05,
    'backward pointwise': 1.212e-05,
    'backward softmax': 1.181e-05,
    'backward view': 1.238e-05,
    'forward attention': 1.027e-05,
    'forward gemm': 1.53e-05,
    'forward pointwise': 1.108e-05,
    'forward softmax': 1.327e-05,
    'forward view': 9.963e-06,
}
STEP_S = {
    'forward': 0.0001552,
    'train': 0.0008932,
}
HOST_S = {
    'checkpointed chunk': 0.0008681,
    'forced sdpa backend': 5.418e-05,
}
EFFICIENCY = {
    'cudnn backward half': 0.372,
    'cudnn forward half': 0.3743,
    'efficient backward fp32': 0.3871,
    'efficient backward half': 0.1716,
    'efficient forward fp32': 0.414,
    'efficient forward half': 0.1427,
    'flash backward half': 0.2039,
    'flash forward half': 0.1678,
    'gemm bf16': 0.2374,
    'gemm fp16': 0.2843,
    'gemm fp32': 0.5388,
}
BANDWIDTH_EFFICIENCY = {
    'softmax': 1.0,
    '*': 0.7428,
}
MAIN = {
    'rows': 416,
    'median_ratio': 0.9843,
    'p10_ratio': 0.7339,
    'p90_ratio': 1.372,
    'typical_factor': 1.178,
    'p90_factor': 1.473,
    'order_pairs': 939,
    'order_agree': 810,
    'order_agreement': 0.8626,
    'order_agreement_50pct': 0.9356,
    'order_pairs_50pct': 590,
    'order_agreement_2x': 0.9733,
    'order_pairs_2x': 300,
    'identical_pairs': 30,
    'noise_pairs': 22,
}
HELDOUT = {
    'rows': 352,
    'median_ratio': 1.202,
    'p10_ratio': 0.8747,
    'p90_ratio': 1.697,
    'typical_factor': 1.231,
    'p90_factor': 1.697,
    'order_pairs': 737,
    'order_agree': 633,
    'order_agreement': 0.8589,
    'order_agreement_50pct': 0.9141,
    'order_pairs_50pct': 454,
    'order_agreement_2x': 0.9123,
    'order_pairs_2x': 228,
    'identical_pairs': 27,
    'noise_pairs': 17,
}
