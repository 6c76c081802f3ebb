"""Model analysis: parameters and FLOPs measured from configs, and the paper's numbers."""
from .complexity import (DEFAULT_SHAPES, analyze_config, analyze_model, build_model,
                         gflops_with_elementwise)
from .paper import PAPER, paper_numbers

__all__ = ['analyze_config', 'analyze_model', 'build_model', 'gflops_with_elementwise',
           'DEFAULT_SHAPES', 'PAPER', 'paper_numbers']
