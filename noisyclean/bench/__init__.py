"""Benchmarking: seeded label noise with ground truth, metrics and the runner."""

#: Fashion-MNIST's classes in their official index order, as the bench's example data
#: (``examples/make_fashion_mnist.py``) names them.
FASHION_MNIST_CLASSES = (
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
)
