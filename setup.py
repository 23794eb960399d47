from setuptools import setup

# migrations/ lives at the top of the repository (Alembic's convention) but ships inside
# the package as quorra.migrations, so `quorra migrate` works from an installed wheel.
setup(
    package_dir={"quorra.migrations": "migrations"},
)
