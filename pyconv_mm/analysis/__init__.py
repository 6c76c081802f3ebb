"""Model analysis: parameters and FLOPs measured from configs, and the paper's numbers."""
from .complexity import DEFAULT_SHAPES, analyze_config, analyze_model, build_model
from .paper import PAPER, paper_numbers

__all__ = ['analyze_config', 'analyze_model', 'build_model', 'DEFAULT_SHAPES', 'PAPER',
           'paper_numbers']
