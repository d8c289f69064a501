from catkin_pkg.python_setup import generate_distutils_setup
from setuptools import setup

setup(**generate_distutils_setup(packages=["ros_tensorflow"], package_dir={"": "src"}))
