"""The fault suite shares tests/conftest.py's fixtures; settle_times is there too."""
