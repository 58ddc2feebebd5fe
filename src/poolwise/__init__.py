"""poolwise: structure-aware pooling for attention networks.

GGeM heads for Vision Transformers (Ko et al., arXiv 2212.04114) and L-SFAN pain-behaviour
detection (Ortigoso-Narro et al., arXiv 2406.16913), built on one registry of pooling operators.
"""

__version__ = "0.1.0"
