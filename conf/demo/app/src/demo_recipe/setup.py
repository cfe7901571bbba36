from setuptools import setup

setup(
    name="demo_recipe",
    version="1.0",
    packages=["demo_recipe"],
    entry_points={"zc.buildout": ["default = demo_recipe:Client", "noop = demo_recipe:Noop"]},
)
