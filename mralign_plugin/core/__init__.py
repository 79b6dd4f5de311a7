"""The paper's math and file formats: stdlib, numpy and torch only; never imports an adapter."""
