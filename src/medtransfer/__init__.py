"""medtransfer: which pretrained backbone should I start from for medical imaging, and why?"""

__version__ = "0.1.0"
